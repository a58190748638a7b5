// The clouds by name, as --cloud takes them: the one list the table of clouds (src/clouds/table.ts) must
// cover, line for line, and the option's choices (src/options.ts).
export const CLOUDS = ['aws', 'azure', 'gcp'] as const;
export type CloudName = (typeof CLOUDS)[number];
