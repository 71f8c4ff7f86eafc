# sockherd %preun, as %systemd_preun does: on erase (not upgrade) disable and stop the service.
if [ "$1" -eq 0 ] && [ -x /usr/bin/systemctl ]; then
    /usr/bin/systemctl --no-reload disable --now sockherd.service >/dev/null 2>&1 || :
fi
exit 0
