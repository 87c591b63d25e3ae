"""Run last (see conftest): the user's `$HOME` and ZenML config are as they were.

Only what ZenML, pip and the runner would write is compared: other programs on the
machine may add their own entries to `$HOME` meanwhile.
"""

import os

from conftest import BEFORE, REAL_HOME, REAL_ZENML_CONFIG, SESSION, snapshot

#: Top-level entries of `$HOME` that ZenML (`.config/zenml`, a repository's `.zen`),
#: pip (`.cache/pip`) or the runner (`.local/state/steprunner`) would create.
OURS = {".config", ".local", ".cache", ".zen", ".zenml"}


def test_the_users_home_and_zenml_config_are_untouched():
    assert os.environ["HOME"].startswith(str(SESSION)), "the tests did not isolate HOME"
    assert not REAL_ZENML_CONFIG.is_relative_to(SESSION)
    new = set(os.listdir(REAL_HOME)) - BEFORE["home"] if REAL_HOME.is_dir() else set()
    assert not new & OURS, f"new entries in the user's home `{REAL_HOME}`: {sorted(new & OURS)}"
    assert snapshot(REAL_ZENML_CONFIG, 6) == BEFORE["zenml_config"], (
        f"the user's ZenML config `{REAL_ZENML_CONFIG}` changed"
    )
    runner_state = REAL_HOME / ".local" / "state" / "steprunner"
    assert snapshot(runner_state, 2) == BEFORE["runner_state"], f"`{runner_state}` changed"
    assert snapshot(REAL_HOME / ".zen", 2) == BEFORE["zen_repo"], "`~/.zen` changed"
