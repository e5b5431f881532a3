"""Unit tests of gaps found by running Modal programs written from Modal's docs against gust:
each test is a place where gust behaved differently from Modal. Run:
cd sdk/python && python3 -m unittest tests.test_unit_explore -v
"""

import os
import sys
import unittest
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gust  # noqa: E402
from gust import exception  # noqa: E402


class SecretFromLocalEnvironTest(unittest.TestCase):
    def test_missing_variable_is_an_error_locally_only(self):
        env = {k: v for k, v in os.environ.items() if k not in ("GUST_IS_REMOTE", "EXPLORE_UNSET")}
        with mock.patch.dict(os.environ, env, clear=True):
            with self.assertRaises(exception.InvalidError):
                gust.Secret.from_local_environ(["EXPLORE_UNSET"])
        # In a function's container the module is imported again without the launcher's
        # environment: Modal's lazy secret does not fail there, so neither may gust's.
        with mock.patch.dict(os.environ, dict(env, GUST_IS_REMOTE="1"), clear=True):
            s = gust.Secret.from_local_environ(["EXPLORE_UNSET"])
            self.assertEqual(s.env, {})


class NoOutputYetTest(unittest.TestCase):
    def test_is_both_timeout_errors(self):
        e = exception._NoOutputYetError("x")
        self.assertIsInstance(e, TimeoutError)  # Modal's FunctionCall.get(timeout=) raises this
        self.assertIsInstance(e, exception.TimeoutError)
        self.assertIsInstance(e, exception.Error)


class OlderSpellingsTest(unittest.TestCase):
    def test_static_delete_is_objects_delete(self):
        from gust import _kv
        for cls in (gust.Dict, gust.Queue, gust.Volume):
            with mock.patch.object(_kv._Manager, "delete") as delete:
                cls.delete("x", allow_missing=True)
            delete.assert_called_once_with("x", allow_missing=True, environment_name=None, client=None)

    def test_registered_web_endpoints(self):
        app = gust.App("explore-web-names")

        @app.function()
        @gust.wsgi_app()
        def web():
            return None

        @app.function()
        def plain():
            return None

        self.assertEqual(app.registered_web_endpoints, ["web"])


class CloudpickleHintTest(unittest.TestCase):
    def test_missing_cloudpickle_says_what_to_do(self):
        from gust import _serialization
        # A pickle that names a function of the module cloudpickle, as cloudpickle's pickles of
        # lambdas do; the module is hidden, as in a container whose image lacks it.
        data = b"ccloudpickle.cloudpickle\n_make_function\n."
        with mock.patch.dict(sys.modules, {"cloudpickle": None}):
            with self.assertRaises(exception.DeserializationError) as cm:
                _serialization.deserialize(data)
        self.assertIn("pip_install(\"cloudpickle\")", str(cm.exception))


class AioEverywhereTest(unittest.TestCase):
    def test_modal_async_methods_have_aio(self):
        from gust import _kv, secret
        want = {gust.App: ["lookup", "deploy"], gust.Function: ["get_web_url"],
                gust.FunctionCall: ["gather", "get_gen"], gust.Cls: ["hydrate"], gust.Secret: ["hydrate"],
                gust.Image: ["build", "hydrate"], gust.Sandbox: ["detach"],
                gust.Volume: ["info", "iterdir", "read_file", "read_file_into_fileobj", "rename"],
                _kv._Manager: ["create", "list", "delete"], secret._SecretManager: ["create", "list", "delete"]}
        import inspect
        from gust import functions
        for cls, names in want.items():
            for n in names:
                self.assertIsInstance(inspect.getattr_static(cls, n),
                                      (functions._Aio, functions._AioStatic, functions._AioClass), f"{cls.__name__}.{n}")
        self.assertTrue(callable(gust.Volume.objects.create.aio))

    def test_class_method_aio_binds_the_class(self):
        import asyncio
        from gust.functions import add_aio

        class K:
            @classmethod
            def make(cls, x):
                return (cls, x)

            @classmethod
            def each(cls, n):
                return iter(range(n))

        add_aio(K, ["make"], gen=["each"])

        class Sub(K):
            pass

        self.assertEqual(K.make(1), (K, 1))
        self.assertEqual(asyncio.run(Sub.make.aio(2)), (Sub, 2))

        async def collect():
            return [x async for x in K.each.aio(3)]

        self.assertEqual(asyncio.run(collect()), [0, 1, 2])


class SandboxRegionTest(unittest.TestCase):
    def test_region_and_cloud_are_accepted_as_for_functions(self):
        # gpu="H1000" stops the call before anything is sent; region= and cloud= must not stop it first.
        with self.assertRaises(exception.InvalidError) as cm:
            gust.Sandbox.create(region="us-east", cloud="aws", gpu="H1000")
        self.assertNotIn("region", str(cm.exception))
        self.assertIn("H1000", str(cm.exception))


class DockerfileCommandsTest(unittest.TestCase):
    def test_instructions_become_steps(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "a.txt"), "w") as f:
                f.write("a")
            img = gust.Image.debian_slim().dockerfile_commands(
                ["RUN echo one && \\\n    echo two", "ENV A=1 B=2"], "WORKDIR /srv", "COPY a.txt ./", context_dir=d)
        steps = img._spec["steps"]
        self.assertEqual([s["type"] for s in steps[:3]], ["run_commands", "env", "workdir"])
        self.assertEqual(steps[0]["commands"][0].split(), ["echo", "one", "&&", "echo", "two"])
        self.assertEqual(steps[1]["vars"] if "vars" in steps[1] else steps[1].get("env"), {"A": "1", "B": "2"})
        self.assertIn("/srv/a.txt", json_dump(steps[3:]))

    def test_refusals(self):
        b = gust.Image.debian_slim()
        with self.assertRaises(exception.InvalidError):
            b.dockerfile_commands("FROM python:3.11")
        with self.assertRaises(exception.InvalidError):
            b.dockerfile_commands("HEALTHCHECK CMD true")
        with self.assertRaises(exception.InvalidError):
            b.dockerfile_commands("RUN true", context_files={"/a": "b"})
        with self.assertRaises(TypeError):
            b.dockerfile_commands("RUN true", bogus=1)


def json_dump(v):
    import json
    return json.dumps(v, default=str)


class BuildFilesInContainerTest(unittest.TestCase):
    def test_absent_build_files_do_not_fail_the_containers_import(self):
        env = dict(os.environ, GUST_IS_REMOTE="1")
        with mock.patch.dict(os.environ, env, clear=True):
            gust.Image.from_dockerfile("/no/such/Dockerfile").dockerfile_commands("COPY nope.txt /x")
            gust.Image.debian_slim().pip_install_from_requirements("/no/such/requirements.txt")
        with self.assertRaises(exception.InvalidError):  # locally they are still checked
            gust.Image.from_dockerfile("/no/such/Dockerfile")


if __name__ == "__main__":
    unittest.main()
