"""Run last (see conftest): the user's `$HOME` and ZenML config are as they were."""

import os

from conftest import BEFORE, REAL_HOME, REAL_ZENML_CONFIG, SESSION, snapshot


def test_the_users_home_and_zenml_config_are_untouched():
    assert os.environ["HOME"].startswith(str(SESSION)), "the tests did not isolate HOME"
    assert not REAL_ZENML_CONFIG.is_relative_to(SESSION)
    new = set(os.listdir(REAL_HOME)) - BEFORE["home"] if REAL_HOME.is_dir() else set()
    assert not new, f"new entries in the user's home `{REAL_HOME}`: {sorted(new)}"
    assert snapshot(REAL_ZENML_CONFIG, 6) == BEFORE["zenml_config"], (
        f"the user's ZenML config `{REAL_ZENML_CONFIG}` changed"
    )
    runner_state = REAL_HOME / ".local" / "state" / "steprunner"
    assert snapshot(runner_state, 2) == BEFORE["runner_state"], f"`{runner_state}` changed"
