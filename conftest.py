"""The tests' fixtures, registered for the whole suite. pytest reads
pytest_plugins only from the rootdir's conftest, so the list lives here and
the fixtures in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.helpdesk",
    # Before outbound, which builds on its receiver and constants.
    "tests.fixtures.sandbox",
    "tests.fixtures.outbound",
    "tests.fixtures.business",
    # Its hook saves a screenshot of every page a browser test leaves open.
    "tests.fixtures.browser",
    # The live workspace (`stack`) the workspace's browser tests share.
    "tests.fixtures.workspace",
]
