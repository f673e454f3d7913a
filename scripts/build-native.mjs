// Placeholder replaced by the native backend build script.
process.exit(0);
