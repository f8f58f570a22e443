# Install rules, the exported CMake package of the C++ SDKs and the Debian package (cpack).
# Included once from the top-level CMakeLists.txt after every target exists. docs/operations.md
# ("Installing the package") says where things go; docs/decisions.md §68 says why.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Where the package puts the files of the system integration. Absolute on purpose: a Debian
# package installs to /usr but its configuration lives in /etc and its unit in /lib/systemd.
set(IOTHUB_CONFIG_DIR /etc/iothub CACHE PATH "where iothubd.toml is installed")
set(IOTHUB_SYSTEMD_UNIT_DIR /lib/systemd/system CACHE PATH "where iothubd.service is installed")

# --- Programs -------------------------------------------------------------------------------
set(iothub_programs iothubd iothubctl simdevice)
foreach(app schedulejobs fleetsim)
  if(TARGET ${app})
    list(APPEND iothub_programs ${app})
  endif()
endforeach()
install(TARGETS ${iothub_programs} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# --- C++ SDKs -------------------------------------------------------------------------------
# A consumer links iothub::device and/or iothub::service. They are static libraries, so the
# static libraries they link (their own shared TLS code and the hub's common, auth and MQTT
# codec modules) are installed and exported too; the public headers include only each other
# (include/iothub/*.hpp holds the vocabulary: Status, Result, Json, Clock, Random, connection
# strings) and third-party headers.
# Their headers are C++20: a consumer gets the standard with the targets.
target_compile_features(iothub_device_sdk PUBLIC cxx_std_20)
target_compile_features(iothub_service_sdk PUBLIC cxx_std_20)
set_target_properties(iothub_device_sdk PROPERTIES EXPORT_NAME device)
set_target_properties(iothub_service_sdk PROPERTIES EXPORT_NAME service)
set_target_properties(iothub_sdk_common PROPERTIES EXPORT_NAME sdk_common)
set_target_properties(iothub_common PROPERTIES EXPORT_NAME common)
set_target_properties(iothub_auth PROPERTIES EXPORT_NAME auth)
set_target_properties(iothub_mqtt PROPERTIES EXPORT_NAME mqtt)
install(TARGETS iothub_device_sdk iothub_service_sdk iothub_sdk_common iothub_common iothub_auth
                iothub_mqtt
        EXPORT iothubTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# Stripping (cpack's CPACK_STRIP_FILES, cmake --install --strip) covers programs, not static
# archives: drop the archives' debug sections too (about 100 MB of their 110 in RelWithDebInfo),
# keeping the symbols a link needs.
install(CODE "
  if(CMAKE_INSTALL_DO_STRIP)
    file(GLOB archives \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/libiothub_*.a\")
    foreach(archive IN LISTS archives)
      execute_process(COMMAND \"${CMAKE_STRIP}\" --strip-debug \"\${archive}\" COMMAND_ERROR_IS_FATAL ANY)
    endforeach()
  endif()")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/iothub
                  ${PROJECT_SOURCE_DIR}/sdk/common/include/iothub
                  ${PROJECT_SOURCE_DIR}/sdk/device/include/iothub
                  ${PROJECT_SOURCE_DIR}/sdk/service/include/iothub
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")

set(iothub_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/iothub)
install(EXPORT iothubTargets NAMESPACE iothub:: DESTINATION ${iothub_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/packaging/iothubConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/iothubConfig.cmake
                              INSTALL_DESTINATION ${iothub_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/iothubConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/iothubConfig.cmake ${PROJECT_BINARY_DIR}/iothubConfigVersion.cmake
        DESTINATION ${iothub_cmake_dir})

# --- System integration, docs, the web console ----------------------------------------------
install(FILES ${PROJECT_SOURCE_DIR}/packaging/iothubd.toml DESTINATION ${IOTHUB_CONFIG_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/packaging/iothubd.service DESTINATION ${IOTHUB_SYSTEMD_UNIT_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
        FILES_MATCHING PATTERN "*.md")
# The web console's static files. iothubd serves the copy compiled into it (src/console); this
# one is for a reverse proxy that serves /ui itself.
if(EXISTS ${PROJECT_SOURCE_DIR}/console)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/console/ DESTINATION ${CMAKE_INSTALL_DATADIR}/iothub/console)
endif()

# --- The Debian package ---------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME iothub)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "iothub")
set(CPACK_PACKAGE_CONTACT "iothub maintainers <maintainers@iothub.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "self-hosted hub speaking Azure IoT Hub's protocols")
set(CPACK_PACKAGE_DESCRIPTION
    "iothub serves Azure IoT Hub's service REST API over HTTPS and its device MQTT over TLS,\n\
so the official Azure IoT SDKs work against it unmodified. Its jobs engine invokes direct\n\
methods or updates device twins on every device a query selects. The package holds the hub\n\
(iothubd, run by iothubd.service as the iothub system user), the iothubctl command line, the\n\
sample device and service programs, and the C++ device and service SDKs with a CMake package\n\
(find_package(iothub)).")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Merged with what dpkg-shlibdeps finds: postinst creates the system user with adduser.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
# What a program built with the SDKs' CMake package needs at build time.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS
    "cmake, libboost1.81-dev, libboost-json1.81-dev, libboost-url1.81-dev, libssl-dev, libspdlog-dev")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/conffiles ${PROJECT_SOURCE_DIR}/packaging/postinst
    ${PROJECT_SOURCE_DIR}/packaging/prerm ${PROJECT_SOURCE_DIR}/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
