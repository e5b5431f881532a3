"""The Python half of scripts/gpu-check: run on a machine with an NVIDIA GPU against a gust it
started (GUST_SERVER_URL, GUST_TOKEN). Prints a report; exits 1 on any failure."""
import json
import os
import subprocess
import sys
import time

import gust as modal

app = modal.App("gpu-check")
image = modal.Image.debian_slim()


@app.function(image=image, gpu="any", timeout=300)
def cuda_probe():
    """nvidia-smi -L, then CUDA through the driver library alone (ctypes)."""
    import ctypes
    out = {"nvidia_smi": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip(),
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "dev": sorted(d for d in os.listdir("/dev") if d.startswith("nvidia"))}
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(name, *args):
        r = getattr(cuda, name)(*args)
        if r != 0:
            s = ctypes.c_char_p()
            cuda.cuGetErrorString(r, ctypes.byref(s))
            raise RuntimeError(f"{name}: CUDA error {r} {s.value}")

    t0 = time.time()
    check("cuInit", 0)
    n = ctypes.c_int()
    check("cuDeviceGetCount", ctypes.byref(n))
    dev = ctypes.c_int()
    check("cuDeviceGet", ctypes.byref(dev), 0)
    name = ctypes.create_string_buffer(256)
    check("cuDeviceGetName", name, 256, dev)
    ctx = ctypes.c_void_p()
    check("cuCtxCreate_v2", ctypes.byref(ctx), 0, dev)
    out["init_s"] = round(time.time() - t0, 3)
    size = 1 << 30
    ptr = ctypes.c_uint64()
    check("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(size))
    chunk = 64 << 20
    src = (ctypes.c_ubyte * chunk).from_buffer_copy(os.urandom(chunk))
    dst = (ctypes.c_ubyte * chunk)()
    t1 = time.time()
    check("cuMemcpyHtoD_v2", ptr, src, ctypes.c_size_t(chunk))
    check("cuMemcpyDtoH_v2", dst, ptr, ctypes.c_size_t(chunk))
    out["copy_64mib_round_trip_s"] = round(time.time() - t1, 4)
    out["round_trip_ok"] = bytes(src) == bytes(dst)
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    check("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
    out["mem_free_mib"], out["mem_total_mib"] = free.value >> 20, total.value >> 20
    check("cuMemFree_v2", ptr)
    check("cuCtxDestroy_v2", ctx)
    out.update(device_count=n.value, device_name=name.value.decode(), alloc_gib=1)
    return out


@app.function(image=image, gpu="any")
def gpu_noop():
    return "gpu"


@app.function(image=image)
def cpu_noop():
    return "cpu"


@app.function(image=image)
def warm_up():
    return "the worker's first container pays for one-time work (unpacking the SDK): not a cold start"


def first_gpu_type():
    out = subprocess.run([os.environ.get("GUST_BIN", "gust"), "worker", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) > 3 and f[1] == "gpu" and f[2] == "0":
            return f[3]
    return "any"


def main():
    failures = []
    report = {}
    with app.run():
        # Cold starts, in the same run: each function's first call starts its first container.
        warm_up.remote()
        for name, fn in (("cpu", cpu_noop), ("gpu", gpu_noop)):
            t = time.time()
            fn.remote()
            report[f"cold_start_{name}_s"] = round(time.time() - t, 3)
        t = time.time()
        gpu_noop.remote()
        report["warm_gpu_call_s"] = round(time.time() - t, 4)

        try:
            p = cuda_probe.remote()
            report["function"] = p
            if len(p["nvidia_smi"].splitlines()) != 1:
                failures.append(f"the function's nvidia-smi -L lists {p['nvidia_smi']!r}, want one GPU")
            if not p["round_trip_ok"]:
                failures.append("the cuMemcpy round trip did not give the bytes back")
            if p["device_count"] != 1:
                failures.append(f"CUDA sees {p['device_count']} devices in the function, want 1")
        except Exception as e:  # noqa: BLE001 - reported, then failed
            failures.append(f"cuda_probe: {type(e).__name__}: {e}")

        typ = first_gpu_type()
        report["sandbox_gpu"] = typ
        sb = modal.Sandbox.create(app=app, image=image, gpu=typ, timeout=120)
        try:
            p = sb.exec("sh", "-c", "nvidia-smi -L; ls /dev | grep -x 'nvidia[0-9]*'")
            lines = p.stdout.read().strip().splitlines()
            p.wait()
            report["sandbox"] = lines
            gpus = [l for l in lines if l.startswith("GPU ")]
            nodes = [l for l in lines if l.startswith("nvidia")]
            if len(gpus) != 1 or len(nodes) != 1:
                failures.append(f"the sandbox sees {gpus} and /dev {nodes}, want exactly one GPU")
        finally:
            sb.terminate()

    print(json.dumps(report, indent=2))
    ratio = report["cold_start_gpu_s"] / max(report["cold_start_cpu_s"], 1e-6)
    print(f"cold start: gpu {report['cold_start_gpu_s']} s vs cpu {report['cold_start_cpu_s']} s (x{ratio:.2f})")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
