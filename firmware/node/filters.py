# Outlier-robust aggregation of a window of samples (house style 5: fixed arrays, no lists
# growing in the hot loop). A Window keeps up to `size` samples per channel in array('f').
from array import array

try:
    from micropython import const
except ImportError:  # CPython (the pure tests)

    def const(x):
        return x


_MAX_SAMPLES = const(30)  # per report window (config checks report_s / sample_s <= this)


def median(a, n):
    """Median of a[0:n]; sorts that slice in place (insertion sort, no allocation)."""
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x
    h = n // 2
    return a[h] if n & 1 else (a[h - 1] + a[h]) / 2


def robust_mean(a, n, k, scratch):
    """Mean of the samples within k scaled MADs of the median (Hampel identifier; 1.4826 makes
    the MAD a standard-deviation estimate for normal noise). -> (mean, samples used)."""
    if n == 0:
        return None, 0
    med = median(a, n)
    for i in range(n):
        scratch[i] = abs(a[i] - med)
    mad = median(scratch, n) * 1.4826
    # Floor the spread: quantised sensors (PMS5003 integers) often give MAD = 0.
    floor = abs(med) * 0.1
    if mad < floor:
        mad = floor
    if mad < 1e-3:
        mad = 1e-3
    lim = k * mad
    s = 0.0
    m = 0
    for i in range(n):
        if abs(a[i] - med) <= lim:
            s += a[i]
            m += 1
    return s / m, m


class Window:
    """Samples of named channels over one report window. Sized to the samples a report
    actually takes (fit() grows it after a `set`), not to the most a config allows."""

    def __init__(self, channels, size=_MAX_SAMPLES):
        size = min(max(size, 1), _MAX_SAMPLES)
        self.channels = channels
        self.size = size
        self.data = {}
        self.count = {}
        for c in channels:
            self.data[c] = array("f", bytes(4 * size))
            self.count[c] = 0
        self._scratch = array("f", bytes(4 * size))
        self.samples = 0

    def fit(self, size):
        """Room for `size` samples per channel; the samples already held stay."""
        size = min(max(size, 1), _MAX_SAMPLES)
        if size <= self.size:
            return
        for c in self.channels:
            old = self.data[c]
            a = array("f", bytes(4 * size))
            for i in range(self.count[c]):
                a[i] = old[i]
            self.data[c] = a
        self._scratch = array("f", bytes(4 * size))
        self.size = size

    def add(self, values):
        self.samples += 1
        for c in self.channels:
            v = values.get(c)
            if v is None:
                continue
            i = self.count[c]
            if i < self.size:
                self.data[c][i] = v
                self.count[c] = i + 1

    def reset(self):
        for c in self.channels:
            self.count[c] = 0
        self.samples = 0

    def robust(self, k):
        """{channel: robust mean} for channels with samples, and the sample count."""
        out = {}
        for c in self.channels:
            n = self.count[c]
            if n:
                out[c] = robust_mean(self.data[c], n, k, self._scratch)[0]
        return out

    def medians(self):
        out = {}
        for c in self.channels:
            n = self.count[c]
            if n:
                out[c] = median(self.data[c], n)
        return out

    def save(self):
        """Plain lists for RTC memory across deep sleep."""
        out = {}
        for c in self.channels:
            out[c] = [self.data[c][i] for i in range(self.count[c])]
        return [self.samples, out]

    def load(self, s):
        self.samples = s[0]
        for c, vals in s[1].items():
            if c in self.data:
                n = min(len(vals), self.size)
                for i in range(n):
                    self.data[c][i] = vals[i]
                self.count[c] = n
