"""Web endpoints as a Modal program writes them (run by TestWebEndpoints): a plain WSGI
callable, a hand-written ASGI app (HTTP and a websocket echo), `python3 -m http.server` under
web_server, and a WSGI app behind proxy auth. Standard library only. Deployed; prints the URLs
as JSON on its last line for the test to call with plain HTTP requests.
"""

import json
import sys
import time

import gust as modal

app = modal.App(sys.argv[1] if len(sys.argv) > 1 else "web-test")


def echo_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/event-stream")])

        def events():
            for i in range(3):
                yield f"data: event {i}\n\n".encode()
                time.sleep(0.5)
        return events()
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/teapot":
        start_response("418 I'm a teapot", [("Content-Type", "text/plain")])
        return [b"short and stout"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    print(f"wsgi request {environ['REQUEST_METHOD']} {path}")  # reaches the app's logs
    out = json.dumps({"method": environ["REQUEST_METHOD"], "path": path, "query": environ["QUERY_STRING"],
                      "body": body.decode(), "x_test": environ.get("HTTP_X_TEST", ""),
                      "modal_key": environ.get("HTTP_MODAL_KEY", "")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out))),
                              ("X-Served-By", "wsgi")])
    return [out]


@app.function(scaledown_window=2)
@modal.concurrent(max_inputs=20)
@modal.wsgi_app(label="echo")
def wsgi():
    return echo_app


async def asgi_echo(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo: " + (m.get("text") or "")})
    m = await receive()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]})
    for i in range(3):
        await send({"type": "http.response.body", "body": f"part {i} {scope['method']} {m['body'].decode()}\n".encode(),
                    "more_body": True})
        import asyncio
        await asyncio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"end\n"})


@app.function()
@modal.asgi_app()
def asgi():
    return asgi_echo


@app.function()
@modal.web_server(8000, startup_timeout=20)
def files():
    import os
    import subprocess
    os.makedirs("/tmp/www", exist_ok=True)
    with open("/tmp/www/hello.txt", "w") as f:
        f.write("hello from http.server\n")
    subprocess.Popen(["python3", "-m", "http.server", "8000", "--directory", "/tmp/www"])


@app.function()
@modal.web_server(8001)
def wsserver():
    """A websocket server on a port of its own under web_server (here gust's own ASGI server,
    started by hand, serving asgi_echo in a thread)."""
    from gust import _webserve
    _webserve.start(lambda: asgi_echo, {"type": "asgi", "port": 8001})


@app.function()
@modal.wsgi_app(label="private", requires_proxy_auth=True)
def private():
    return echo_app


@app.cls()
class Model:
    """A web endpoint on a class, beside a method: the instance is made (@enter) first."""

    @modal.enter()
    def load(self):
        self.state = "loaded by @enter"

    @modal.method()
    def ping(self, x):
        return x + 1

    @modal.wsgi_app()
    def web(self):
        def serve(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [self.state.encode()]
        return serve


@app.function(timeout=2, max_containers=1)
@modal.wsgi_app()
def serial():
    """One request at a time (no @concurrent), one container: requests wait their turn."""
    return echo_app


@app.function()
@modal.fastapi_endpoint(method="POST")
def needs_fastapi(item: dict):
    return item


if __name__ == "__main__":
    app.deploy()
    urls = {name: fn.get_web_url() for name, fn in [("wsgi", wsgi), ("asgi", asgi), ("files", files), ("private", private),
                                                       ("serial", serial), ("needs_fastapi", needs_fastapi),
                                                       ("wsserver", wsserver)]}
    urls["model"] = Model().web.get_web_url()
    urls["model_ping"] = str(Model().ping.remote(1))
    try:
        wsgi.remote()
    except modal.exception.InvalidError as e:
        urls["remote_error"] = str(e)
    print(json.dumps({"app_id": app.app_id, "urls": urls, "wsgi_id": wsgi.object_id}))
