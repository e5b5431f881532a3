"""python_version="3.13": an image of Debian trixie, whose python3 is 3.13."""
import sys

import gust as modal

app = modal.App("smallgaps-py313")


@app.function(image=modal.Image.debian_slim(python_version="3.13"))
def version():
    return "%d.%d" % sys.version_info[:2]


@app.local_entrypoint()
def main():
    print("RESULT local", "%d.%d" % sys.version_info[:2])
    print("RESULT remote", version.remote())
    try:
        modal.Image.debian_slim(python_version="3.12").build(app)
        print("RESULT refused none")
    except modal.exception.Error as e:
        print("RESULT refused", type(e).__name__, "3.11 (Debian bookworm)" in str(e), "3.13 (Debian trixie)" in str(e))
