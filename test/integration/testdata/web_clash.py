"""A second app that asks for a label another app holds (run by TestWebEndpoints)."""

import gust as modal

app = modal.App("web-clash-test")


@app.function()
@modal.wsgi_app(label="echo")
def other():
    return lambda environ, start_response: []


if __name__ == "__main__":
    try:
        app.deploy()
    except modal.exception.Error as e:
        print(f"refused: {type(e).__name__}: {e}")
    else:
        print("deployed")
