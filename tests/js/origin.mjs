// Connects the official socket.io-client to $RAIN_URL over a websocket only
// (Node's polling transport may not set an Origin header; its websocket may),
// sending `Origin: <argv[2]>` (none when it is "-"), and prints one line:
// "connected" or "connect_error: <message>". Run by tests/origins.rs.
import { io } from "socket.io-client";

const origin = process.argv[2];
const socket = io(process.env.RAIN_URL, {
  transports: ["websocket"],
  reconnection: false,
  timeout: 5000,
  extraHeaders: origin === "-" ? {} : { Origin: origin },
});
socket.on("connect", () => {
  console.log("connected");
  socket.close();
});
socket.on("connect_error", (error) => {
  console.log(`connect_error: ${error.message}`);
  socket.close();
});
