# Pre-install scriptlet of both rpm packages: creates the system user and group `meshtun`
# the services run as (User=meshtun in systemd/*.service), if they do not exist yet.
getent group meshtun >/dev/null || groupadd --system meshtun
getent passwd meshtun >/dev/null ||
    useradd --system --gid meshtun --home-dir / --no-create-home \
        --shell /sbin/nologin --comment "meshtun daemon" meshtun
