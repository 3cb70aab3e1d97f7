"""Fixtures of the flow tests: one Prefect test server for the whole folder.

A test server takes ~16 s to start on an idle 2-core machine (more on a busy one), and every test
here runs flows against one. `tests/flows/__init__.py` makes this folder a package, so the
package-scoped server below starts at the first test that asks for it and stops after the last
test of the folder, before any other folder's tests. The tests sharing it read back only what they
wrote: task runs by their own flow run id, champions under their own serving tag, the artifact their
own run wrote last.
"""

import pytest


@pytest.fixture(scope="package")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
