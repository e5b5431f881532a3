"""A Modal program with a Volume shared between the caller, functions and a sandbox, unchanged
but for the import: what test/integration/volume_test.go runs. It prints RESULT lines.

It starts from an empty volume: it deletes the one a previous run left.
"""
import errno
import io
import os
import tempfile
import time

import gust as modal

name = "vol-program-data"
vol = modal.Volume.from_name(name, create_if_missing=True)
app = modal.App("vol-program", volumes={"/appvol": vol})


@app.function(volumes={"/data": vol})
def writer(text):
    with open("/data/x.txt", "w") as f:
        f.write(text)
    os.makedirs("/data/sub/dir", exist_ok=True)
    with open("/data/sub/dir/deep.txt", "w") as f:
        f.write("deep")
    vol.commit()
    return sorted(os.listdir("/data"))


# One container (max_containers=1) for the reload calls: mount-time view, then reload.
@app.function(volumes={"/data": vol}, max_containers=1, scaledown_window=120)
def looker(op):
    cid = os.environ.get("MODAL_SANDBOX_ID")
    if op == "reload":
        vol.reload()
    if op == "reload_open":
        f = open("/data/x.txt")
        try:
            vol.reload()
            return cid, "reloaded with an open file"
        except RuntimeError as e:
            return cid, "RuntimeError: " + str(e)
        finally:
            f.close()
    with open("/data/x.txt") as f:
        return cid, f.read()


@app.function()
def app_level():
    # App(volumes=...) mounts in every function of the app.
    with open("/appvol/client.txt") as f:
        return f.read()


@app.function(volumes={"/data": vol})
def commit_open():
    # A commit while a file under the mount is open for writing: what was flushed is committed.
    f = open("/data/open.txt", "w")
    f.write("written while open")
    f.flush()
    vol.commit()
    f.close()
    return "ok"


@app.function(volumes={"/data": vol}, isolation="gvisor")
def gvisor_commit():
    # vol.commit() inside gVisor, through the worker's socket.
    with open("/data/gvfn.txt", "w") as f:
        f.write("committed in gVisor")
    vol.commit()
    return "ok"


@app.function(volumes={"/ro": vol.read_only()})
def read_only_write():
    try:
        with open("/ro/nope.txt", "w") as f:
            f.write("x")
        return "written"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


@app.function(volumes={"/sub": vol.with_mount_options(sub_path="sub/dir")})
def sub_path():
    seen = sorted(os.listdir("/sub"))
    with open("/sub/new.txt", "w") as f:
        f.write("via sub_path")
    vol.commit()
    return seen


def read(path):
    return b"".join(vol.read_file(path)).decode()


def main():
    modal.Volume.objects.delete(name, allow_missing=True)
    with app.run():
        # Client uploads, read back.
        local = tempfile.mkdtemp()
        os.makedirs(os.path.join(local, "a"))
        for rel, text in (("one.txt", "1"), ("a/two.txt", "22")):
            with open(os.path.join(local, rel), "w") as f:
                f.write(text)
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"hello from the client"), "/client.txt")
            batch.put_directory(local, "/up")
        print("RESULT client_read", read("/client.txt"))
        print("RESULT listdir", sorted((e.path, e.type.name, e.size) for e in vol.listdir("/up", recursive=True)))
        try:
            with vol.batch_upload() as batch:
                batch.put_file(io.BytesIO(b"again"), "/client.txt")
            print("RESULT upload_exists", "no error")
        except FileExistsError:
            print("RESULT upload_exists", "FileExistsError")
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"forced"), "/client.txt")
        print("RESULT upload_force", read("/client.txt"))

        # A function writes and commits; the client and a sandbox see it.
        print("RESULT writer", writer.remote("v1"))
        print("RESULT client_sees_fn", read("/x.txt"))
        sb = modal.Sandbox.create(app=app, volumes={"/mnt/v": vol})
        p = sb.exec("cat", "/mnt/v/x.txt", "/mnt/v/client.txt")
        print("RESULT sandbox_sees", p.stdout.read().replace("\n", "|"))

        # The looker container mounts v1; a commit elsewhere (v2) is not seen until reload().
        cid1, before = looker.remote("read")
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"v2"), "/x.txt")
        cid2, stale = looker.remote("read")
        cid3, refused = looker.remote("reload_open")
        cid4, fresh = looker.remote("reload")
        print("RESULT one_container", len({cid1, cid2, cid3, cid4}) == 1)
        print("RESULT reload_view", [before, stale, fresh])
        print("RESULT reload_open", refused.split(":")[0] + ":" + refused.split(":")[1])

        # The sandbox still sees v1 until reload_volumes(); what it writes is committed when it stops.
        p = sb.exec("cat", "/mnt/v/x.txt")
        old = p.stdout.read()
        sb.reload_volumes()
        p = sb.exec("cat", "/mnt/v/x.txt")
        print("RESULT sandbox_reload", [old, p.stdout.read()])
        # Without a commit, the background commit makes the sandbox's write visible within seconds.
        sb.exec("sh", "-c", "echo in the background > /mnt/v/bg.txt").wait()
        bg, deadline = None, time.time() + 20
        while time.time() < deadline:
            try:
                bg = read("/bg.txt").strip()
                break
            except FileNotFoundError:
                time.sleep(0.5)
        print("RESULT background_commit", bg)
        p = sb.exec("sh", "-c", "echo from the sandbox > /mnt/v/from_sb.txt && rm /mnt/v/up/one.txt")
        p.wait()
        sb.terminate(wait=True)
        print("RESULT sandbox_commit", read("/from_sb.txt").strip())
        print("RESULT sandbox_delete", sorted(e.path for e in vol.listdir("/up", recursive=True)))

        print("RESULT commit_open", commit_open.remote(), read("/open.txt"))
        print("RESULT app_level", app_level.remote())
        print("RESULT iterdir", sorted(e.path for e in vol.iterdir("/up")))
        info = vol.info()
        print("RESULT info", info.name, info.created_at is not None, vol.name)
        print("RESULT objects", name in [v.name for v in modal.Volume.objects.list()])
        modal.Volume.objects.create(name + "-2", allow_existing=True)
        try:
            modal.Volume.objects.create(name + "-2")
            print("RESULT objects_create", "no error")
        except modal.exception.AlreadyExistsError:
            print("RESULT objects_create", "AlreadyExistsError")
        modal.Volume.rename(name + "-2", name + "-3")
        print("RESULT renamed", modal.Volume.from_name(name + "-3").hydrate().name)
        modal.Volume.objects.delete(name + "-3")
        with modal.Volume.ephemeral() as ev:
            with ev.batch_upload() as batch:
                batch.put_file(io.BytesIO(b"temporary"), "/t.txt")
            print("RESULT ephemeral", b"".join(ev.read_file("t.txt")).decode())
            eid = ev.object_id
        try:
            modal.Volume.from_id(eid).listdir("/")
            print("RESULT ephemeral_gone", False)
        except modal.exception.NotFoundError:
            print("RESULT ephemeral_gone", True)
        print("RESULT read_only", read_only_write.remote())
        print("RESULT sub_path", sub_path.remote())
        print("RESULT sub_path_commit", read("/sub/dir/new.txt"))

        # Under gVisor: the mount-time version, writes committed when the sandbox stops; reload refused.
        gsb = modal.Sandbox.create(app=app, volumes={"/g": vol}, isolation="gvisor")
        seen = gsb.exec("cat", "/g/x.txt").stdout.read()
        gsb.exec("sh", "-c", "echo from gvisor > /g/gv.txt").wait()
        try:
            gsb.reload_volumes()
            refused = "no error"
        except modal.exception.InvalidError as e:
            refused = "InvalidError" if "gVisor" in str(e) else str(e)
        gsb.terminate(wait=True)
        print("RESULT gvisor", seen, read("/gv.txt").strip(), refused)
        print("RESULT gvisor_commit", gvisor_commit.remote(), read("/gvfn.txt"))

        # Client-side changes.
        vol.copy_files(["/x.txt"], "/copied.txt")
        print("RESULT copy", read("/copied.txt"))
        try:
            vol.remove_file("/sub")
            print("RESULT remove_dir", "no error")
        except modal.exception.InvalidError:
            print("RESULT remove_dir", "InvalidError")
        vol.remove_file("/sub", recursive=True)
        print("RESULT removed", "sub" not in [e.path for e in vol.listdir("/")])
        for what, f in (("read_missing", lambda: read("/nope.txt")),
                        ("remove_missing", lambda: vol.remove_file("/nope.txt")),
                        ("list_missing", lambda: vol.listdir("/nope"))):
            try:
                f()
                print("RESULT", what, "no error")
            except FileNotFoundError:
                print("RESULT", what, "FileNotFoundError")

        # Bad input, each refused as Modal refuses it.
        bad = {}
        try:
            modal.Volume.from_name("no-such-volume-anywhere").hydrate()
        except modal.exception.NotFoundError:
            bad["missing"] = "NotFoundError"
        try:
            app.function(volumes={"/data": "not a volume"})(lambda: None)
        except modal.exception.InvalidError:
            bad["type"] = "InvalidError"
        try:
            app.function(volumes={"data": vol})(lambda: None)
        except modal.exception.InvalidError:
            bad["relative"] = "InvalidError"
        try:
            modal.Volume.from_name("bad name!")
        except modal.exception.InvalidError:
            bad["name"] = "InvalidError"
        try:
            vol.reload()
        except RuntimeError:
            bad["reload_outside"] = "RuntimeError"
        print("RESULT bad", sorted(bad.items()))


if __name__ == "__main__":
    main()
