package abi

// TimeLeft is the time a restored timer is armed with: what was left at
// checkpoint time, or 1 ns for a periodic timer read the instant it expired
// (it shows no time left, and zero would disarm it). armed is false for a
// disarmed timer.
func TimeLeft(sec, nsec, intervalSec, intervalNsec int64) (int64, int64, bool) {
	if sec != 0 || nsec != 0 {
		return sec, nsec, true
	}
	if intervalSec == 0 && intervalNsec == 0 {
		return 0, 0, false
	}
	return 0, 1, true
}
