INSERT INTO clothing_stages (NAME, URL) VALUES ($name, $url)
ON CONFLICT (NAME) DO UPDATE SET URL = excluded.URL;
