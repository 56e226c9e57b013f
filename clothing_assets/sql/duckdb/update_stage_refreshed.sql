UPDATE clothing_stages SET REFRESHED_AT = current_timestamp WHERE NAME = $name;
