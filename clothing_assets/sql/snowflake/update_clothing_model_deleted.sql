UPDATE clothing_models SET DELETED_AT = %(changed_at)s WHERE VERSION = %(version)s;
