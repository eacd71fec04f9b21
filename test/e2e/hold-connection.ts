/**
 * Holds one TCP connection to a service open and idle, run inside a namespace by a test: prints
 * "open" once connected, then sends each line it reads on stdin and prints the one-line answer;
 * prints "closed" and exits as soon as the service ends the connection (a FIN or a RST).
 */
import net from 'node:net';
import readline from 'node:readline';

const [host, port] = process.argv.slice(2);
if (!host || !port) throw new Error('usage: hold-connection HOST PORT');
const socket = net.connect(Number(port), host, () => console.log('open'));
let answer = '';
socket.on('data', (chunk: Buffer) => {
  answer += chunk.toString();
  for (let end = answer.indexOf('\n'); end >= 0; end = answer.indexOf('\n')) {
    console.log(answer.slice(0, end));
    answer = answer.slice(end + 1);
  }
});
socket.on('close', () => {
  console.log('closed');
  process.exit(0);
});
socket.on('error', (err) => console.log(`error ${err.message}`));
readline.createInterface({ input: process.stdin }).on('line', (line) => socket.write(`${line}\n`));
