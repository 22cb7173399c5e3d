# Pre-install scriptlet of the meshtun-controller rpm: creates the system user and group
# `meshtun-controller` the service runs as (User=meshtun-controller in
# systemd/meshtun-controller.service), apart from the daemons' `meshtun` user, if they do not
# exist yet.
getent group meshtun-controller >/dev/null || groupadd --system meshtun-controller
getent passwd meshtun-controller >/dev/null ||
    useradd --system --gid meshtun-controller --home-dir / --no-create-home \
        --shell /sbin/nologin --comment "meshtun controller" meshtun-controller
