// txn.js PORT: ioredis and node-redis transactions against a server; prints one JSON
// object with what each client got (test_clients_node.py compares it).
'use strict';
const Redis = require('ioredis');
const { createClient } = require('redis');

async function main() {
  const port = Number(process.argv[2]);
  const out = {};
  const io = new Redis({ port, lazyConnect: false });
  out.ioredis_multi = await io.multi().set('n:a', '1').incr('n:a').hset('n:h', 'f', 'v')
    .hgetall('n:h').sadd('n:s', 'x').smembers('n:s').exec();
  out.ioredis_pipeline_error = (await io.multi().set('n:str', 'x').hset('n:str', 'f', 'v')
    .get('n:str').exec()).map(([err, v]) => [err ? err.message : null, v]);
  await io.watch('n:w');
  const io2 = new Redis({ port });
  await io2.set('n:w', 'other');
  io2.disconnect();
  out.ioredis_watch = await io.multi().set('n:w', 'mine').exec();
  try {
    await io.multi().set('n:q', '1').call('nosuchcommand').exec();
    out.ioredis_execabort = 'no error';
  } catch (e) {
    out.ioredis_execabort = e.message;
  }
  io.disconnect();

  const nr = createClient({ socket: { port } });
  await nr.connect();
  out.noderedis_multi = await nr.multi().set('r:a', '5').incrBy('r:a', 2).hSet('r:h', 'f', 'v')
    .hGetAll('r:h').sAdd('r:s', 'y').get('r:a').exec();
  await nr.watch('r:w');
  const other = createClient({ socket: { port } });
  await other.connect();
  await other.set('r:w', 'other');
  try {
    await nr.multi().set('r:w', 'mine').exec();
    out.noderedis_watch = 'ran';
  } catch (e) {
    out.noderedis_watch = e.constructor.name;
  }
  out.noderedis_after = await nr.get('r:w');
  await other.quit();
  await nr.quit();
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
