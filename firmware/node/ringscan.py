# Outbox start-up (node/outbox.py imports it once and unloads it): read the small state file
# and rebuild the ring pointers by scanning the slots. Records are in (boot, seq) order around
# the ring, so the slot with the highest key is the head, and the first valid record after the
# custody watermark, counting from the head, is the tail.
import json


def load_meta(ob):
    try:
        with open(ob.meta_path) as f:
            m = json.load(f)
        ob.wm_boot = m["boot"]
        ob.wm_seq = m["seq"]
        ob.dropped = m["dropped"]
        ob.corrupt = m.get("corrupt", 0)
        old_cap = m["cap"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if old_cap != ob.cap:
        # The ring on flash has the old geometry. Keep it until it is empty (then resize).
        ob._want_cap = ob.cap
        ob.cap = old_cap


def recover(ob):
    cap = ob.cap
    best = -1
    bb = bs = -1
    for i in range(cap):
        r = ob._read_slot(i)
        if r is not None and (r[0], r[1]) > (bb, bs):
            bb, bs, best = r[0], r[1], i
    ob.last_boot = bb
    ob.head = ob.tail = ob.depth = 0
    if best >= 0:
        ob.head = ob.tail = (best + 1) % cap
        for k in range(cap):
            i = (ob.head + k) % cap
            r = ob._read_slot(i)
            if r is not None and (r[0], r[1]) > (ob.wm_boot, ob.wm_seq):
                ob.tail = i
                ob.depth = cap - k
                break
    ob.sent = 0
    want = ob._want_cap
    if want is not None and ob.depth == 0:
        ob.cap = want
        ob.head = ob.tail = 0
        ob._want_cap = None
        ob._f.close()
        ob._f = open(ob.path, "w+b")  # truncate: the old geometry is gone
        ob.persist()
