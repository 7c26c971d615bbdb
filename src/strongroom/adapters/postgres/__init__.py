"""PostgreSQL resource types and the code they share.

- ``logical``: the ``postgres`` type (one database, ``pg_dump``/``pg_restore``);
- ``cluster``: the ``postgres-cluster`` type (a whole cluster, physical);
- ``direct``: the cluster backup that reads the data directory itself (``pg_backup_start``/``stop``);
- ``tar``: the streaming tar extraction a cluster restore unpacks through;
- ``restored_conf``: what a restored cluster's configuration may not run;
- ``dump_format`` and ``dump_roles``: reading a custom-format dump's table of contents (offsets, roles);
- ``tools``: finding and running the PostgreSQL client tools, DSNs, ports, OS users.
"""
