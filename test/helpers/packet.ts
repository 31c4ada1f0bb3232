// The packet builders and from-scratch checkers live in src/tools/packet.ts,
// shared with the fuzzer (`npm run fuzz`); the tests import them from here.
export * from '../../src/tools/packet.js';
