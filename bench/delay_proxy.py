#!/usr/bin/env python3
"""A TCP proxy for HTTP/1.1 that delays every request by a fixed time and logs it.

    delay_proxy.py --listen PORT --upstream PORT [--delay-ms 50] [--log FILE]

Listens on 127.0.0.1:PORT and forwards to 127.0.0.1:UPSTREAM. On each client connection it
parses the request stream (request line + headers, then a Content-Length or chunked body),
waits --delay-ms before forwarding each request, and appends one line per request to --log:
`<unix time> <METHOD> <path without query> <connection no>`. Responses are piped back
unchanged. The delay models one network round trip per request: a client that sends its
requests one after another pays it each time, one that keeps N connections busy pays it once per
N requests. Used by bench/engine-v2.sh rtt.
"""
import argparse
import asyncio
import time

ARGS = None
LOG = None
CONN_NO = 0


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def requests(creader, uwriter, conn):
    """Reads requests from the client, delays each, forwards it upstream."""
    try:
        while True:
            head = await creader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target = (lines[0].split(b" ") + [b"", b""])[:2]
            length, chunked = 0, False
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v.strip())
                elif k == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            LOG.write(f"{time.time():.4f} {method.decode()} {target.split(b'?')[0].decode()} {conn}\n")
            LOG.flush()
            if ARGS.delay_ms:
                await asyncio.sleep(ARGS.delay_ms / 1000)
            uwriter.write(head)
            if chunked:
                while True:
                    size_line = await creader.readuntil(b"\r\n")
                    uwriter.write(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    uwriter.write(await creader.readexactly(size + 2))
                    if size == 0:
                        break
            else:
                while length > 0:
                    chunk = await creader.read(min(length, 1 << 20))
                    if not chunk:
                        return
                    uwriter.write(chunk)
                    length -= len(chunk)
                    await uwriter.drain()
            await uwriter.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            uwriter.close()
        except Exception:
            pass


async def handle(creader, cwriter):
    global CONN_NO
    CONN_NO += 1
    try:
        ureader, uwriter = await asyncio.open_connection("127.0.0.1", ARGS.upstream)
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(requests(creader, uwriter, CONN_NO), pipe(ureader, cwriter))


async def main():
    global ARGS, LOG
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=50)
    p.add_argument("--log", default="/dev/null")
    ARGS = p.parse_args()
    LOG = open(ARGS.log, "a")
    server = await asyncio.start_server(handle, "127.0.0.1", ARGS.listen, limit=1 << 20)
    print(f"proxy 127.0.0.1:{ARGS.listen} -> :{ARGS.upstream}, +{ARGS.delay_ms} ms per request",
          flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
