# The dependency rule of docs/architecture.md, checked when CMake configures:
# a library or tool that links something it may not fails the configure step,
# in every build and in CI. tools/check_layout.sh checks the same rule on
# #include lines.
#
#   server → engine → {cache, model, context}; tools → {replay, model, proto};
#   replay → cache → tiers; model and tiers/hbm → kernels; common at the bottom.

# What each target may reach, directly or through others: our libraries, and
# third-party ones named in KVTIER_LAYOUT_THIRD_PARTY that a target may not
# reach unless listed.
set(KVTIER_LAYOUT_THIRD_PARTY RocksDB::rocksdb nlohmann_json::nlohmann_json PkgConfig::LIBURING
    PkgConfig::GRPCPP gRPC::grpc++_reflection PkgConfig::CPP_HTTPLIB)
set(kvtier_layout_kvtier_common "")
set(kvtier_layout_kvtier_kernels kvtier_common)
set(kvtier_layout_kvtier_tier_api kvtier_common)
set(kvtier_layout_kvtier_hbm kvtier_tier_api kvtier_kernels kvtier_common)
set(kvtier_layout_kvtier_rocks_guard kvtier_common RocksDB::rocksdb)
set(kvtier_layout_kvtier_tiers kvtier_tier_api kvtier_hbm kvtier_rocks_guard kvtier_kernels kvtier_common
    RocksDB::rocksdb PkgConfig::LIBURING)
set(kvtier_layout_kvtier_cache kvtier_tier_api kvtier_common)
set(kvtier_layout_kvtier_context kvtier_rocks_guard kvtier_common RocksDB::rocksdb nlohmann_json::nlohmann_json)
set(kvtier_layout_kvtier_replay kvtier_cache kvtier_tier_api kvtier_common nlohmann_json::nlohmann_json)
set(kvtier_layout_kvtier_model kvtier_kernels kvtier_common nlohmann_json::nlohmann_json)
set(kvtier_layout_kvtier_engine kvtier_model kvtier_cache kvtier_context ${kvtier_layout_kvtier_model}
    ${kvtier_layout_kvtier_cache} ${kvtier_layout_kvtier_context})
set(kvtier_layout_kvtier_proto kvtier_proto_gen kvtier_common PkgConfig::GRPCPP)
set(kvtier_layout_kvtier_server kvtier_engine kvtier_tiers kvtier_proto ${kvtier_layout_kvtier_engine}
    ${kvtier_layout_kvtier_tiers} ${kvtier_layout_kvtier_proto} PkgConfig::CPP_HTTPLIB gRPC::grpc++_reflection)
# The CLIs: none links the server, the engine or the tiers it does not need.
set(kvtier_layout_kvtier kvtier_proto ${kvtier_layout_kvtier_proto} nlohmann_json::nlohmann_json)
set(kvtier_layout_kvtier-trace kvtier_replay ${kvtier_layout_kvtier_replay})
set(kvtier_layout_kvtier-mkmodel kvtier_model ${kvtier_layout_kvtier_model})

# Appends to ${out} every target `target` links, directly or transitively.
function(kvtier_link_closure target out)
  set(seen "")
  set(queue ${target})
  while(queue)
    list(POP_FRONT queue t)
    if(NOT TARGET ${t})
      continue()
    endif()
    get_target_property(type ${t} TYPE)
    set(deps "")
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(direct ${t} LINK_LIBRARIES)
      if(direct)
        list(APPEND deps ${direct})
      endif()
    endif()
    get_target_property(iface ${t} INTERFACE_LINK_LIBRARIES)
    if(iface)
      list(APPEND deps ${iface})
    endif()
    foreach(d IN LISTS deps)
      # $<LINK_ONLY:x> and other wrappers: keep the name inside.
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" d "${d}")
      if(d MATCHES "^\\$<" OR d IN_LIST seen)
        continue()
      endif()
      list(APPEND seen ${d})
      list(APPEND queue ${d})
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

function(kvtier_check_layout)
  set(errors "")
  foreach(target kvtier_common kvtier_kernels kvtier_tier_api kvtier_hbm kvtier_rocks_guard kvtier_tiers
                 kvtier_cache kvtier_context kvtier_replay kvtier_model kvtier_engine kvtier_proto
                 kvtier_server kvtier kvtier-trace kvtier-mkmodel)
    if(NOT TARGET ${target})
      continue()
    endif()
    kvtier_link_closure(${target} reached)
    foreach(d IN LISTS reached)
      set(ours FALSE)
      if(d MATCHES "^kvtier")
        set(ours TRUE)
      endif()
      if((ours OR d IN_LIST KVTIER_LAYOUT_THIRD_PARTY) AND NOT d IN_LIST kvtier_layout_${target})
        string(APPEND errors "\n  ${target} links ${d}")
      endif()
    endforeach()
  endforeach()
  if(errors)
    message(FATAL_ERROR "Layout rule broken (cmake/KvtierLayout.cmake, docs/architecture.md):${errors}")
  endif()
endfunction()
