UPDATE clothing_models SET DELETED_AT = $changed_at WHERE VERSION = $version;
