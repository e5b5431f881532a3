"""Image constructors Modal has and gust cannot offer: each a clear gust error."""
import gust as modal

app = modal.App("smallgaps-refused")


@app.local_entrypoint()
def main():
    for name, make in (("micromamba", lambda: modal.Image.micromamba(python_version="3.11")),
                       ("micromamba_install", lambda: modal.Image.debian_slim().micromamba_install("numpy")),
                       ("from_aws_ecr", lambda: modal.Image.from_aws_ecr("123.dkr.ecr.us-east-1.amazonaws.com/x:1"))):
        try:
            make()
            print("RESULT", name, "none")
        except modal.exception.Error as e:
            print("RESULT", name, type(e).__name__, "not supported by gust" in str(e))
