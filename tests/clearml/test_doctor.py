"""vm.max_map_count check for Elasticsearch."""

from mlstack.doctor import check_max_map_count


def test_low_value_is_named_with_the_fix(tmp_path):
    setting = tmp_path / "max_map_count"
    setting.write_text("65530\n")
    problem = check_max_map_count(setting)
    assert "vm.max_map_count is 65530" in problem
    assert "sudo sysctl -w vm.max_map_count=524288" in problem
    assert "/etc/sysctl.d/" in problem


def test_enough_is_no_problem(tmp_path):
    setting = tmp_path / "max_map_count"
    setting.write_text("1048576\n")
    assert check_max_map_count(setting) is None


def test_unreadable_setting_is_reported(tmp_path):
    assert "does not exist" in check_max_map_count(tmp_path / "missing")
