import { defineCommand } from '../command.ts';
import { backendDetails, describeBackend, useBackend } from '../backend-info.ts';
import { packageVersion } from '../package-info.ts';

export const infoCommand = defineCommand({
  name: 'info',
  summary: 'print version, runtime and backend information',
  options: {
    backend: { type: 'boolean', help: 'print only the backend details (backends, threads, CPU features)' },
    json: { type: 'boolean', help: 'print the same information as JSON' },
  },
  run(options, io) {
    useBackend(undefined);
    const backend = backendDetails();
    const info = {
      lowbit: packageVersion(),
      node: process.versions.node,
      platform: `${process.platform}-${process.arch}`,
      backends: backend,
    };
    if (options.json) {
      io.print(JSON.stringify(options.backend ? backend : info, null, 2));
      return;
    }
    const lines: [string, string][] = [];
    if (!options.backend) {
      lines.push(['lowbit', info.lowbit], ['node', info.node], ['platform', info.platform]);
    }
    lines.push(['backends', backend.available.join(', ')], ['active', describeBackend(backend)]);
    if (backend.nativeUnavailable) lines.push(['native', `not available: ${backend.nativeUnavailable}`]);
    if (backend.cpuFeatures) lines.push(['cpu features', backend.cpuFeatures.join(' ') || '(none detected)']);
    const width = Math.max(...lines.map(([k]) => k.length));
    for (const [k, v] of lines) io.print(`${k.padEnd(width)}  ${v}`);
  },
});
