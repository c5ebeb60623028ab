"""The one duration formatter of progress lines and landscape-status."""
from launch.progress import clock_text


def test_durations_are_clock_time_under_a_day_and_days_from_one_on():
    assert clock_text(3723.4) == "01:02:03"
    assert clock_text(59.6) == "00:01:00"
    assert clock_text(86400 * 1.26) == "1.3 days"
