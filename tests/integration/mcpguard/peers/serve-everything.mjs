// Starts @modelcontextprotocol/server-everything in Streamable HTTP mode (its `streamableHttp`
// transport, endpoint /mcp) bound to 127.0.0.1 only, on PORT (0: a free port). The server itself
// listens on every interface; this wrapper pins its listen() to loopback and prints
// `everything listening 127.0.0.1:PORT` on stderr once it accepts.
//
//   node serve-everything.mjs PEERS_DIR
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

const peersDir = process.argv[2];
if (!peersDir) {
  console.error("usage: serve-everything.mjs PEERS_DIR");
  process.exit(2);
}
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || typeof args[0] === "string") {
    const port = Number(args[0]);
    const callback = args.find((arg) => typeof arg === "function");
    this.once("listening", () => {
      console.error(`everything listening 127.0.0.1:${this.address().port}`);
    });
    return listen.call(this, port, "127.0.0.1", callback);
  }
  return listen.apply(this, args);
};
process.on("SIGTERM", () => process.exit(0));
process.argv = [process.argv[0], "index.js", "streamableHttp"];
await import(
  pathToFileURL(
    path.join(peersDir, "node_modules/@modelcontextprotocol/server-everything/dist/transports/streamableHttp.js"),
  ).href
);
