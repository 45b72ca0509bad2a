"""The docs' tests: the `slow` marker, registered here so that this folder works alone."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a long run (a full experiment, a serve run); selected with -m slow"
    )
