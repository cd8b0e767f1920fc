# The Python client (clients/python) and the vLLM connector's logic against a
# real kvtierd; included by tests/CMakeLists.txt. Each module runs through
# run_test.sh in the venv tools/python_env.sh makes from requirements.txt
# (PyPI), with the client installed editable.
set(kvtier_python_tests client_test)
# The connector's test is added once it exists (re-run cmake after adding it).
if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/connector_test.py)
  list(APPEND kvtier_python_tests connector_test)
endif()
foreach(python_test IN LISTS kvtier_python_tests)
  add_test(NAME python.${python_test}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_test.sh ${python_test})
  set_tests_properties(python.${python_test} PROPERTIES
                       ENVIRONMENT "KVTIER_BIN_DIR=${CMAKE_BINARY_DIR}/bin" TIMEOUT 600)
endforeach()
