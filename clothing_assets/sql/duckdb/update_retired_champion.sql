UPDATE clothing_models SET STATUS = 'retired', REASON = $reason
WHERE STATUS = 'champion' AND VERSION <> $version;
