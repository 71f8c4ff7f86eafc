# Installation layout and the .deb/.rpm packages (CPack). Included from the top CMakeLists.txt.
# `sh packaging/build.sh` configures a portable Release build and runs the `package` target.
#
#   /usr/bin/sockherd
#   /etc/sockherd/sockherd.toml                 conffile / %config(noreplace); listens on port 80
#   /usr/share/sockherd/www/                    the demo page (the same one the binary embeds)
#   /lib/systemd/system/sockherd.service        (.deb; /usr/lib/systemd/system in the .rpm)
#   /usr/share/man/man8/sockherd.8.gz
#   /usr/share/doc/sockherd/                    README.md, copyright, changelog(.gz)

set(SOCKHERD_PKG ${PROJECT_SOURCE_DIR}/packaging)

# Compressed once at build time, reproducibly (-n: no name or time stamp in the header).
find_program(SOCKHERD_GZIP gzip REQUIRED)
set(SOCKHERD_GZ_DIR ${PROJECT_BINARY_DIR}/packaging)
set(SOCKHERD_GZ_FILES)
foreach(pair "sockherd.8;sockherd.8.gz" "changelog;changelog.gz")
  list(GET pair 0 src)
  list(GET pair 1 dst)
  add_custom_command(OUTPUT ${SOCKHERD_GZ_DIR}/${dst}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${SOCKHERD_GZ_DIR}
    COMMAND ${SOCKHERD_GZIP} -9nc ${SOCKHERD_PKG}/${src} > ${SOCKHERD_GZ_DIR}/${dst}
    DEPENDS ${SOCKHERD_PKG}/${src}
    VERBATIM)
  list(APPEND SOCKHERD_GZ_FILES ${SOCKHERD_GZ_DIR}/${dst})
endforeach()
add_custom_target(sockherd_docs ALL DEPENDS ${SOCKHERD_GZ_FILES})

install(FILES ${SOCKHERD_PKG}/sockherd.toml DESTINATION /etc/sockherd
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/etc/www/ DESTINATION ${CMAKE_INSTALL_DATADIR}/sockherd/www
  FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${SOCKHERD_GZ_DIR}/sockherd.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${SOCKHERD_PKG}/copyright ${SOCKHERD_GZ_DIR}/changelog.gz
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
# Units go to /usr/lib/systemd/system (the .rpm's place); packaging/deb-layout.cmake moves the
# unit to /lib/systemd/system inside the .deb, where Debian 12's tools expect it.
install(FILES ${SOCKHERD_PKG}/sockherd.service DESTINATION lib/systemd/system)

set(CPACK_PACKAGE_NAME sockherd)
set(CPACK_PACKAGE_VENDOR "The sockherd developers")
set(CPACK_PACKAGE_CONTACT "sockherd developers <maintainers@sockherd.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "WebSocket node: a supervisor and its workers in one binary")
set(CPACK_PACKAGE_DESCRIPTION
  "sockherd runs a whole WebSocket node as one service. A supervisor binds the\n\
listening ports and hands each accepted connection to one of several worker\n\
processes, which serve HTTP/1.1, WebSocket, static files and pub/sub channels\n\
that reach subscribers on every worker. The supervisor restarts crashed or\n\
hung workers, serves a status page and Prometheus metrics, reloads its\n\
configuration without refusing connections and drains gracefully on stop.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB RPM)
set(CPACK_PRE_BUILD_SCRIPTS ${SOCKHERD_PKG}/deb-layout.cmake)

# .deb: sockherd_<version>_<arch>.deb
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON) # dpkg-shlibdeps: libc6 and libsystemd0 with their versions
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${SOCKHERD_PKG}/deb/conffiles ${SOCKHERD_PKG}/deb/postinst ${SOCKHERD_PKG}/deb/prerm ${SOCKHERD_PKG}/deb/postrm)

# .rpm: sockherd-<version>-1.<arch>.rpm
set(CPACK_RPM_FILE_NAME RPM-DEFAULT)
set(CPACK_RPM_PACKAGE_RELEASE 1)
set(CPACK_RPM_PACKAGE_RELOCATABLE OFF) # the unit names /usr/bin/sockherd
set(CPACK_RPM_PACKAGE_LICENSE MIT)
set(CPACK_RPM_PACKAGE_GROUP "System Environment/Daemons")
set(CPACK_RPM_PACKAGE_DESCRIPTION ${CPACK_PACKAGE_DESCRIPTION})
set(CPACK_RPM_PACKAGE_REQUIRES_PRE "shadow-utils")
set(CPACK_RPM_PACKAGE_REQUIRES_POST "systemd")
set(CPACK_RPM_PACKAGE_REQUIRES_PREUN "systemd")
set(CPACK_RPM_PACKAGE_REQUIRES_POSTUN "systemd")
set(CPACK_RPM_CHANGELOG_FILE ${SOCKHERD_PKG}/rpm/changelog)
set(CPACK_RPM_PRE_INSTALL_SCRIPT_FILE ${SOCKHERD_PKG}/rpm/pre.sh)
set(CPACK_RPM_POST_INSTALL_SCRIPT_FILE ${SOCKHERD_PKG}/rpm/post.sh)
set(CPACK_RPM_PRE_UNINSTALL_SCRIPT_FILE ${SOCKHERD_PKG}/rpm/preun.sh)
set(CPACK_RPM_POST_UNINSTALL_SCRIPT_FILE ${SOCKHERD_PKG}/rpm/postun.sh)
# No /usr/lib/.build-id links: they would be the only files outside the package's own paths.
set(CPACK_RPM_SPEC_MORE_DEFINE "%define _build_id_links none")
set(CPACK_RPM_USER_FILELIST "%config(noreplace) /etc/sockherd/sockherd.toml")
# Directories the system owns; the package owns only its own (/etc/sockherd, /usr/share/sockherd…).
set(CPACK_RPM_EXCLUDE_FROM_AUTO_FILELIST_ADDITION
  /etc /usr/lib/systemd /usr/lib/systemd/system /usr/share/man /usr/share/man/man8 /usr/share/doc)

include(CPack)
