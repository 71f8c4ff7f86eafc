# sockherd_embed(OUTPUT file NAMESPACE ns BASE dir FILES f...)
# Generates a C++ source that defines, in namespace `ns`,
#   const std::span<const embedded_file> files();
# (declared in common/embedded.hpp) with each file's path relative to BASE and its bytes.
# Regenerated whenever one of the files changes.
function(sockherd_embed)
  cmake_parse_arguments(E "" "OUTPUT;NAMESPACE;BASE" "FILES" ${ARGN})
  add_custom_command(
    OUTPUT ${E_OUTPUT}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${E_OUTPUT} -DNAMESPACE=${E_NAMESPACE} -DBASE=${E_BASE}
            "-DFILES=${E_FILES}" -P ${PROJECT_SOURCE_DIR}/common/embed_generate.cmake
    DEPENDS ${E_FILES} ${PROJECT_SOURCE_DIR}/common/embed_generate.cmake
    COMMENT "Embedding ${E_BASE} assets"
    VERBATIM)
endfunction()
