// Moved to src/keyspace.ts; this re-export goes once every importer has moved.
export * from '../keyspace.js';
