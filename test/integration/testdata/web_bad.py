"""Bad web endpoint declarations, each refused with Modal's error (run by TestWebEndpoints)."""

import gust as modal

for what, make in [
    ("bad label", lambda: modal.asgi_app(label="Not_A_Label")),
    ("web_server without a port", lambda: modal.web_server()),
    ("missing parentheses", lambda: modal.wsgi_app(lambda: None)),
]:
    try:
        make()
    except modal.exception.InvalidError as e:
        print(f"{what}: InvalidError: {e}")
    else:
        print(f"{what}: accepted")
