# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS): runs after the files are staged, before the
# package is made. Debian 12 keeps system units in /lib/systemd/system (lintian and
# deb-systemd-helper look there); RHEL and Fedora in /usr/lib/systemd/system, where the install
# rule puts it. So for the .deb only, the unit moves.
if(CPACK_GENERATOR STREQUAL "DEB")
  set(stage ${CPACK_TEMPORARY_INSTALL_DIRECTORY})
  file(GLOB units ${stage}/usr/lib/systemd/system/*.service)
  file(MAKE_DIRECTORY ${stage}/lib/systemd/system)
  foreach(unit IN LISTS units)
    get_filename_component(name ${unit} NAME)
    file(RENAME ${unit} ${stage}/lib/systemd/system/${name})
  endforeach()
  file(REMOVE_RECURSE ${stage}/usr/lib/systemd)
  file(GLOB usr_lib ${stage}/usr/lib/*)
  if(NOT usr_lib)
    file(REMOVE_RECURSE ${stage}/usr/lib)
  endif()
endif()
