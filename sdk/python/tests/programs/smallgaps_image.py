"""Image.uv_pip_install, Image.run_function and Image.build(app): test_smallgaps.py runs it
with SMALLGAPS_WHEELS naming a directory that holds a wheel of the package gustdemo."""
import os

import gust as modal

app = modal.App("smallgaps-image")
WHEELS = os.environ.get("SMALLGAPS_WHEELS", "/nonexistent")


def bake(path, text, *, suffix=""):
    """Runs in the image at build time: what it writes stays in the image."""
    import gustdemo
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{text} {gustdemo.VALUE} {os.environ.get('BAKE_SECRET', 'none')} {os.getcwd()}{suffix}")


image = (
    modal.Image.debian_slim()
    .add_local_dir(WHEELS, "/wheels", copy=True)
    .uv_pip_install("gustdemo", find_links="/wheels", extra_options="--no-index")
    .run_function(bake, args=("/opt/baked.txt", "hello"), kwargs={"suffix": "!"},
                  secrets=[modal.Secret.from_dict({"BAKE_SECRET": "s3cret"})])
)


@app.function(image=image)
def check():
    import gustdemo
    with open("/opt/baked.txt") as f:
        baked = f.read()
    return f"{gustdemo.VALUE}|{baked}|{os.path.exists('/.gust-build') and sorted(os.listdir('/.gust-build'))}"


@app.local_entrypoint()
def main():
    built = image.build(app)
    print("RESULT built", built is image, image.object_id.startswith("im-"))
    print("RESULT check", check.remote())
