UPDATE clothing_models SET STATUS = 'retired', REASON = %(reason)s
WHERE STATUS = 'champion' AND VERSION <> %(version)s;
