#!/usr/bin/python3
"""One cold step on an mlfs mount, with the daemon's debug log timestamped.

    timeline.py LOG MNT CMD... -- MLFS mount REF MNT -o ...,debug=fs:layers:fetch -f

Starts the mount command (in the foreground, -f), writes every stderr line
of it to LOG prefixed with the seconds since the start, waits until MNT is a
mountpoint ("[bench] mounted"), runs CMD ("[bench] ... done"), unmounts and
waits for the daemon (its last lines: the mount's chunk summary).  Used by
bench/profile.sh; stdlib only.
"""

import os
import subprocess
import sys
import threading
import time


def main():
    log, mnt = sys.argv[1], sys.argv[2]
    i = sys.argv.index("--")
    cmd, mcmd = sys.argv[3:i], sys.argv[i + 1:]
    t0 = time.monotonic()
    lock = threading.Lock()
    out = open(log, "w")

    def w(s):
        with lock:
            out.write("%8.3f %s" % (time.monotonic() - t0, s))
            out.flush()

    p = subprocess.Popen(mcmd, stderr=subprocess.PIPE, text=True)

    def reader():
        for line in p.stderr:
            w(line)

    th = threading.Thread(target=reader)
    th.start()
    deadline = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if p.poll() is not None or time.monotonic() > deadline:
            th.join()
            sys.exit("timeline: the mount did not come up (see %s)" % log)
        time.sleep(0.002)
    w("[bench] mounted\n")
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    w("[bench] %s done, exit %d\n" % (" ".join(cmd), r.returncode))
    subprocess.run(["fusermount3", "-u", mnt])
    p.wait()
    th.join()
    out.close()
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
