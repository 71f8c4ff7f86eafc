# sockherd %pre: the system user and group the service runs as.
getent group sockherd >/dev/null || groupadd -r sockherd
getent passwd sockherd >/dev/null || \
    useradd -r -g sockherd -d / -s /sbin/nologin -c "sockherd WebSocket node" sockherd
exit 0
