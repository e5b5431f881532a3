"""A Modal program that commits a Volume while other threads of the same container read and
write it, and that chowns files in it: what test/integration/volume_test.go's
TestVolumeCommitWhileBusy runs. It prints RESULT lines.

It starts from an empty volume: it deletes the one a previous run left.
"""
import os
import threading
import time

import gust as modal

name = "vol-commits-data"
vol = modal.Volume.from_name(name, create_if_missing=True)
app = modal.App("vol-commits")


@app.function(volumes={"/data": vol}, timeout=300)
def busy(commits):
    # Files the reader expects to see throughout.
    os.makedirs("/data/keep", exist_ok=True)
    for i in range(20):
        with open("/data/keep/%d.txt" % i, "w") as f:
            f.write("keep %d" % i)
    stop = threading.Event()
    glitches = []
    reads = [0]

    def reader():
        while not stop.is_set():
            try:
                names = os.listdir("/data/keep")
                if len(names) < 20:
                    glitches.append("listdir saw %d files" % len(names))
                # Mostly stat (which holds nothing open: a commit's swap is tried, not put
                # off by an open file), and now and then a read.
                for i in range(20):
                    st = os.stat("/data/keep/%d.txt" % i)
                    if st.st_size != len("keep %d" % i):
                        glitches.append("file %d changed" % i)
                if reads[0] % 50 == 0:
                    with open("/data/keep/7.txt") as f:
                        if f.read() != "keep 7":
                            glitches.append("file 7 changed")
                reads[0] += 1
            except OSError as e:
                glitches.append("%s: %s" % (type(e).__name__, e))

    written = []

    def writer():
        n = 0
        while not stop.is_set():
            p = "/data/w/%d.txt" % n
            try:
                os.makedirs("/data/w", exist_ok=True)
                with open(p, "w") as f:
                    f.write("w%d" % n)
                written.append(n)
            except OSError as e:
                glitches.append("writer %s: %s" % (type(e).__name__, e))
            n += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=reader), threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for i in range(commits):
        with open("/data/c%d.txt" % i, "w") as f:
            f.write("commit %d" % i)
        vol.commit()
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    vol.commit()  # every file the writer wrote, in this commit or an earlier one
    return sorted(set(glitches))[:5], reads[0], len(written)


@app.function(volumes={"/data": vol})
def chown_files():
    with open("/data/owned.txt", "w") as f:
        f.write("owned")
    os.chown("/data/owned.txt", 1234, 2345)
    os.makedirs("/data/owned_dir", exist_ok=True)
    os.chown("/data/owned_dir", 1000, 1000)
    vol.commit()


@app.function(volumes={"/data": vol})
def owners():
    out = []
    for p in ("/data/owned.txt", "/data/owned_dir", "/data/c0.txt"):
        st = os.stat(p)
        out.append((os.path.basename(p), st.st_uid, st.st_gid))
    return out


if __name__ == "__main__":
    modal.Volume.objects.delete(name, allow_missing=True)
    with app.run():
        glitches, reads, written = busy.remote(30)
        print("RESULT glitches", glitches)
        print("RESULT reads", reads > 0)
        files = {e.path for e in vol.listdir("/w")}
        missing = [n for n in range(written) if "w/%d.txt" % n not in files]
        print("RESULT writes_kept", written > 0 and not missing, written, missing[:5])
        print("RESULT commits_kept", sum(1 for e in vol.listdir("/") if e.path.startswith("c")))
        chown_files.remote()
        print("RESULT owners", owners.remote())
    modal.Volume.objects.delete(name, allow_missing=True)
