from __future__ import annotations

import pytest

from catalogd.errors import EX_UNAVAILABLE, MissingDependency
from catalogd.optional import require


def test_a_missing_optional_dependency_names_the_extra_to_install() -> None:
    with pytest.raises(MissingDependency) as caught:
        require("catalogd_no_such_module", "elasticsearch")
    assert caught.value.exit_code == EX_UNAVAILABLE
    assert "pip install 'catalogd[elasticsearch]'" in str(caught.value)


def test_an_installed_dependency_is_returned() -> None:
    assert require("json", "none").dumps([1]) == "[1]"
