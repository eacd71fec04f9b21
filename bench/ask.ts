/** Sends one line to a TCP service and prints its one-line answer (used in a namespace by the benchmark). */
import net from 'node:net';

const [host, port, line] = process.argv.slice(2);
if (!host || !port || !line) throw new Error('usage: ask HOST PORT LINE');
const socket = net.connect(Number(port), host, () => socket.write(`${line}\n`));
let answer = '';
socket.setTimeout(30_000, () => {
  console.error('no answer within 30 s');
  process.exit(1);
});
socket.on('data', (chunk: Buffer) => {
  answer += chunk.toString();
  if (answer.includes('\n')) {
    console.log(answer.trim());
    socket.destroy();
  }
});
socket.on('error', (err) => {
  console.error(err.message);
  process.exit(1);
});
