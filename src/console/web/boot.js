// Opens the event stream as soon as the document is parsed, before preact and the
// page's modules have loaded (index.html runs this module first; it imports nothing).
// Messages that arrive before the store listens are kept and handed over in order.
const TYPES = ['hello', 'events', 'matrix', 'state'];
const early = [];
let deliver = null;

export const source = new EventSource('/api/stream');
for (const type of TYPES) {
  source.addEventListener(type, (m) => {
    if (type === 'hello') performance.mark('hello-received');
    if (deliver) deliver(type, m.data);
    else early.push([type, m.data]);
  });
}

/** The store's handler: first everything kept so far, then each message as it comes. */
export function listen(handler) {
  deliver = handler;
  for (const [type, data] of early.splice(0)) handler(type, data);
}
