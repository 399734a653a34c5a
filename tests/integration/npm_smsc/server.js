// An SMSC for billgw's integration tests, built on the npm `smpp` package
// (farhadi/node-smpp): it shares no code with billgw or its Python SMSC
// simulator, so a receipt it reassembles to the expected text shows that
// billgw's SMPP client, encoder and splitter speak SMPP as another
// implementation reads it.
//
// Usage: node server.js SYSTEM_ID PASSWORD
// Listens on 127.0.0.1, port chosen by the system; prints one JSON line per
// event on stdout: {"event":"listening","port":N}, {"event":"bind",...},
// {"event":"part",...} for every submit_sm, {"event":"message",...} once all
// parts of a message are in (joined by its 8-bit/16-bit UDH or SAR TLVs).
// Every text is decoded by the npm package (data_coding 0: GSM 03.38,
// 8: UCS-2); `raw` is the hex of the octets after the UDH, as received.
// Exits when stdin closes, so a test that dies cannot leave it running.
'use strict';
const smpp = require('smpp');
const defs = require('smpp/lib/defs');

const [systemId, password] = process.argv.slice(2);
if (!systemId || !password) {
  process.stderr.write('usage: node server.js SYSTEM_ID PASSWORD\n');
  process.exit(2);
}

// Keep the octets as received beside the package's decoding of them.
const decodeMessage = defs.filters.message.decode;
defs.filters.message.decode = function (value, skipUdh) {
  const result = decodeMessage.call(this, value, skipUdh);
  if (Buffer.isBuffer(value) && result && typeof result === 'object') {
    const udhLength = result.udh ? value[0] + 1 : 0;
    result.raw = value.slice(udhLength);
  }
  return result;
};

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function concatenation(pdu, sm) {
  for (const udh of sm.udh || []) {
    if (udh[0] === 0x00 && udh[1] === 3) return { scheme: 'udh8', ref: udh[2], total: udh[3], seq: udh[4] };
    if (udh[0] === 0x08 && udh[1] === 4) return { scheme: 'udh16', ref: udh.readUInt16BE(2), total: udh[4], seq: udh[5] };
  }
  if (pdu.sar_msg_ref_num !== undefined && pdu.sar_total_segments !== undefined && pdu.sar_segment_seqnum !== undefined) {
    return { scheme: 'sar', ref: pdu.sar_msg_ref_num, total: pdu.sar_total_segments, seq: pdu.sar_segment_seqnum };
  }
  return null;
}

let nextId = 1;
const pending = new Map();

const server = smpp.createServer(function (session) {
  let bound = false;
  for (const mode of ['bind_transmitter', 'bind_transceiver', 'bind_receiver']) {
    session.on(mode, function (pdu) {
      const ok = pdu.system_id === systemId && pdu.password === password;
      emit({ event: 'bind', mode: mode, system_id: pdu.system_id, ok: ok });
      if (!ok) {
        session.send(pdu.response({ command_status: smpp.ESME_RINVPASWD }));
        session.close();
        return;
      }
      bound = true;
      session.send(pdu.response({ system_id: 'npm-smsc' }));
    });
  }
  session.on('submit_sm', function (pdu) {
    if (!bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    const messageId = 'npm' + String(nextId++).padStart(6, '0');
    session.send(pdu.response({ message_id: messageId }));
    const sm = pdu.short_message;
    const concat = concatenation(pdu, sm);
    const part = {
      event: 'part', message_id: messageId, destination: pdu.destination_addr, dest_ton: pdu.dest_addr_ton,
      dest_npi: pdu.dest_addr_npi, data_coding: pdu.data_coding, esm_class: pdu.esm_class,
      // The package turns a relative validity ("...R") into a Date: seconds from now.
      validity_seconds: pdu.validity_period instanceof Date
        ? Math.round((pdu.validity_period.getTime() - Date.now()) / 1000) : null,
      concatenation: concat, text: sm.message, raw: sm.raw.toString('hex'),
    };
    emit(part);
    if (!concat || concat.total <= 1) {
      emit({ event: 'message', destination: part.destination, data_coding: part.data_coding, scheme: null,
             text: part.text, raw: part.raw, parts: 1, message_ids: [messageId] });
      return;
    }
    const key = [part.destination, concat.scheme, concat.ref, concat.total].join('/');
    const group = pending.get(key) || new Map();
    group.set(concat.seq, part);
    pending.set(key, group);
    if (group.size === concat.total) {
      pending.delete(key);
      const ordered = Array.from(group.keys()).sort((a, b) => a - b).map((seq) => group.get(seq));
      emit({ event: 'message', destination: part.destination, data_coding: part.data_coding,
             scheme: concat.scheme, reference: concat.ref, text: ordered.map((p) => p.text).join(''),
             raw: ordered.map((p) => p.raw).join(''), parts: concat.total,
             message_ids: ordered.map((p) => p.message_id) });
    }
  });
  session.on('enquire_link', function (pdu) { session.send(pdu.response()); });
  session.on('unbind', function (pdu) { session.send(pdu.response()); session.close(); });
  session.on('error', function (err) { emit({ event: 'session_error', error: String(err) }); });
});

server.listen(0, '127.0.0.1', function () {
  emit({ event: 'listening', port: server.address().port });
});
process.stdin.on('end', function () { process.exit(0); });
process.stdin.resume();
