"""Modal's async flavour: `await f.remote.aio(...)`, `async for` over map/generators, Dict and
Queue, `await Sandbox.create.aio(...)`, exec, `async for line in p.stdout`, files, and
`async with app.run()` (when run as a script)."""
import asyncio

import gust as modal

app = modal.App("smallgaps-async")


@app.function()
async def sq(x):
    await asyncio.sleep(0.01)
    return x * x


@app.function()
def gen(n):
    for i in range(n):
        yield i


@app.cls()
class Model:
    @modal.enter()
    def load(self):
        self.k = 10

    @modal.method()
    async def predict(self, x):
        return x + self.k


@app.local_entrypoint()
async def main():
    print("RESULT remote_aio", await sq.remote.aio(3))
    print("RESULT map_aio", [r async for r in sq.map.aio(range(5))])
    print("RESULT gen_aio", [r async for r in gen.remote_gen.aio(3)])
    fc = await sq.spawn.aio(4)
    print("RESULT spawn", await fc.get.aio())
    print("RESULT cls", await Model().predict.remote.aio(1))
    d = modal.Dict.from_name("smallgaps-async-d", create_if_missing=True)
    await d.put.aio("a", 1)
    print("RESULT dict", await d.get.aio("a"), await d.len.aio())
    q = modal.Queue.from_name("smallgaps-async-q", create_if_missing=True)
    await q.put.aio(5)
    print("RESULT queue", await q.get.aio())
    sb = await modal.Sandbox.create.aio("sleep", "30", app=app)
    p = await sb.exec.aio("echo", "hi")
    print("RESULT sb", repr(await p.stdout.read.aio()))
    await p.wait.aio()

    lines = []
    p = await sb.exec.aio("bash", "-c", "echo a; echo b")
    async for line in p.stdout:
        lines.append(line)
    print("RESULT lines", repr("".join(lines)))
    f = await sb.open.aio("/tmp/x", "w")
    await f.write.aio("hello")
    await f.close.aio()
    f = await sb.open.aio("/tmp/x", "r")
    print("RESULT file", await f.read.aio())
    await f.close.aio()
    print("RESULT listed", sb.object_id in [x.object_id async for x in modal.Sandbox.list.aio(app_id=app.app_id)])
    await sb.terminate.aio()



async def script():
    async with app.run():
        print("RESULT script", await sq.remote.aio(5))


if __name__ == "__main__":
    asyncio.run(script())
