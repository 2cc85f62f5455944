# Parking node: a magnetometer under the bay. A car's steel changes the local field; the node
# reports the vector distance from the free-bay baseline and decides occupancy by hysteresis:
# on_count samples above on_ut -> occupied; off_count samples below off_ut -> free. The
# baseline follows slow drift (temperature, season) only while the bay is free and quiet.
# A reading goes out on every state change, and every heartbeat_s without one.
import math

NAMES = {"qmc5883l": ("mag_x", "mag_y", "mag_z")}  # driver -> its channels (node.sensors)

UNITS = {  # channel: (SenML unit, decimals kept)
    "mag_x": ("uT", 2),
    "mag_y": ("uT", 2),
    "mag_z": ("uT", 2),
    "field_delta": ("uT", 2),
    "occupied": ("/", 0),
}


class Kind:
    UNITS = UNITS
    name = "parking"

    def __init__(self, app):
        self.app = app
        self.base = None  # [x, y, z] uT of the free bay
        self.occupied = False
        self.above = 0
        self.below = 0
        self.since = 0

    def lead_ms(self):
        return 0

    async def prepare(self):
        pass

    async def sample(self, t):
        values = {}
        for s in self.app.sensors:
            await s.read(values, self.app)
        self.since += 1
        iv = self.app.cfg["intervals"]
        beat = self.since >= round(iv["heartbeat_s"] / iv["sample_s"])
        x = values.get("mag_x")
        if x is None:
            # No field this sample: nothing to decide; the heartbeat still says we are alive.
            if beat and self.base is not None:
                self.since = 0
                return {"occupied": self.occupied}, 0, 0, False
            return None
        y = values["mag_y"]
        z = values["mag_z"]
        th = self.app.cfg["thresholds"]
        if self.base is None:
            self.base = [x, y, z]  # installed on a free bay (docs/firmware.md)
        b = self.base
        delta = math.sqrt((x - b[0]) ** 2 + (y - b[1]) ** 2 + (z - b[2]) ** 2)
        changed = False
        if self.occupied:
            self.below = self.below + 1 if delta < th["off_ut"] else 0
            if self.below >= th["off_count"]:
                self.occupied = False
                self.below = 0
                changed = True
        else:
            self.above = self.above + 1 if delta > th["on_ut"] else 0
            if self.above >= th["on_count"]:
                self.occupied = True
                self.above = 0
                changed = True
            elif delta < th["off_ut"]:
                a = th["baseline_alpha"]
                b[0] += a * (x - b[0])
                b[1] += a * (y - b[1])
                b[2] += a * (z - b[2])
        if not changed and not beat:
            return None
        self.since = 0
        values["field_delta"] = delta
        values["occupied"] = self.occupied
        return values, 0, 1, False

    def save(self):
        return [self.base, self.occupied, self.above, self.below, self.since]

    def load(self, s):
        self.base, self.occupied, self.above, self.below, self.since = s
