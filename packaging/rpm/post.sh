# sockherd %post, as %systemd_post does: on first install the distribution's presets decide
# whether the service is enabled (Fedora and RHEL leave it disabled until `systemctl enable`).
if [ "$1" -eq 1 ] && [ -x /usr/bin/systemctl ]; then
    /usr/bin/systemctl --no-reload preset sockherd.service >/dev/null 2>&1 || :
fi
exit 0
