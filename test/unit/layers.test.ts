/**
 * The tree shows the pipeline: workflows → activities → providers, with lib beneath them all.
 * Read from the sources themselves (every import of every file), so a change that reaches up a
 * layer, makes a circle, or names a provider outside its registry fails here.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..', '..');
const LAYERS = ['lib', 'providers', 'activities', 'workflows', 'workers', 'client'];

interface Edge {
  from: string;
  to: string;
  typeOnly: boolean;
}

function sources(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

/** Every relative import of a file, resolved to a project file (without the extension). */
function importsOf(file: string): Edge[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const edges: Edge[] = [];
  const statement = /^(import|export)\s+(type\s+)?[^;]*?from\s+'(\.[^']+)'/gm;
  const dynamic = /import\('(\.[^']+)'\)/g;
  for (const m of text.matchAll(statement)) edges.push({ from: file, to: resolve(file, m[3]!), typeOnly: !!m[2] });
  for (const m of text.matchAll(dynamic)) edges.push({ from: file, to: resolve(file, m[1]!), typeOnly: false });
  return edges;
}

function resolve(file: string, specifier: string): string {
  return path.normalize(path.join(path.dirname(file), specifier)).replace(/\.(js|ts)$/, '');
}

const files = LAYERS.flatMap(sources);
const edges = files.flatMap(importsOf);
const layerOf = (file: string) => file.split(path.sep)[0]!;
const under = (file: string, dir: string) => file.startsWith(`${dir}/`);

describe('layers: workflows → activities → providers, lib beneath', () => {
  it('reads every import of the pipeline', () => {
    assert.ok(files.length > 60 && edges.length > 200, `${files.length} files, ${edges.length} imports`);
  });

  it('lib imports nothing above it', () => {
    const up = edges.filter((e) => layerOf(e.from) === 'lib' && layerOf(e.to) !== 'lib');
    assert.deepEqual(up.map((e) => `${e.from} → ${e.to}`), []);
  });

  it('providers import only lib and providers; the host runtime no provider', () => {
    const up = edges.filter((e) => layerOf(e.from) === 'providers' && !['lib', 'providers'].includes(layerOf(e.to)));
    assert.deepEqual(up.map((e) => `${e.from} → ${e.to}`), []);
    const runtimeToProvider = edges.filter((e) => under(e.from, 'providers/runtime') && under(e.to, 'providers/local'));
    assert.deepEqual(runtimeToProvider.map((e) => `${e.from} → ${e.to}`), []);
  });

  it('activities know the provider interface and the host runtime, never a provider', () => {
    const bad = edges.filter((e) => layerOf(e.from) === 'activities' && (['workflows', 'workers', 'client'].includes(layerOf(e.to)) || (under(e.to, 'providers') && !under(e.to, 'providers/runtime') && e.to !== 'providers/provider')));
    assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
  });

  it('workflows import activities as types only, and nothing of providers, workers or clients', () => {
    const bad = edges.filter((e) => layerOf(e.from) === 'workflows' && (['providers', 'workers', 'client'].includes(layerOf(e.to)) || (layerOf(e.to) === 'activities' && !e.typeOnly)));
    assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
  });

  it('the workers name no provider: they open clouds through the registry', () => {
    const bad = edges.filter((e) => layerOf(e.from) === 'workers' && under(e.to, 'providers') && e.to !== 'providers/registry' && e.to !== 'providers/provider');
    assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
  });

  it('has no import circle', () => {
    const next = new Map<string, string[]>();
    for (const e of edges) next.set(e.from.replace(/\.ts$/, ''), [...(next.get(e.from.replace(/\.ts$/, '')) ?? []), e.to]);
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (node: string, trail: string[]) => {
      if (state.get(node) === 'done') return;
      if (state.get(node) === 'open') {
        circles.push([...trail.slice(trail.indexOf(node)), node].join(' → '));
        return;
      }
      state.set(node, 'open');
      for (const to of next.get(node) ?? []) visit(to, [...trail, node]);
      state.set(node, 'done');
    };
    for (const node of next.keys()) visit(node, []);
    assert.deepEqual(circles, []);
  });
});
