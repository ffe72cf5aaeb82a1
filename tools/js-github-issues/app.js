// A JavaScript tool: the open GitHub issues assigned to the signed-in user
// (the JavaScript twin of github-issues). componentize-js (npm) builds it
// against wit/tool.wit; `fetch` goes out through the host, which adds the
// user's token for api.github.com. The script never sees the token.
import { log } from 'airlock:tool/log@0.1.0';

export async function invoke(input) {
  const args = JSON.parse(input);
  const limit = args.limit ?? 20;
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw { tag: 'invalid-input', val: `limit is ${limit}; use 1 to 100` };
  }
  const url = `https://api.github.com/issues?filter=assigned&state=open&sort=created&per_page=${limit}`;
  const response = await fetch(url, {
    headers: { accept: 'application/vnd.github+json', 'user-agent': 'airlock-js-github-issues' },
  });
  if (response.status === 401 || response.status === 403) {
    throw { tag: 'upstream', val: `GitHub refused the request (${response.status})` };
  }
  if (response.status !== 200) {
    throw { tag: 'upstream', val: `GitHub answered ${response.status}` };
  }
  const issues = (await response.json()).map((i) => ({
    number: i.number,
    title: i.title,
    html_url: i.html_url,
    repository: i.repository ? i.repository.full_name : null,
  }));
  log('info', `${issues.length} issues`);
  return JSON.stringify({ issues });
}
