# sockherd %postun, as %systemd_postun_with_restart does: reload unit files; on upgrade restart
# a running service so it runs the new binary (it drains first). Erase keeps a changed
# /etc/sockherd/sockherd.toml as .rpmsave; the runtime directory goes.
if [ -x /usr/bin/systemctl ]; then
    /usr/bin/systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        /usr/bin/systemctl try-restart sockherd.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ]; then
    rm -rf /run/sockherd
fi
exit 0
