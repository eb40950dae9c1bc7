document.querySelectorAll('.browser').forEach(function (b) {
  var sel = b.querySelector('select'), box = b.querySelector('input[type=checkbox]'),
      count = b.querySelector('.count'), qs = b.querySelectorAll('.q');
  function apply() {
    var shown = 0;
    qs.forEach(function (q) {
      var ok = (!sel.value || q.dataset.event === sel.value) && (!box.checked || q.dataset.disagree === '1');
      q.hidden = !ok;
      if (ok) shown++;
    });
    count.textContent = shown + ' of ' + qs.length + ' questions shown';
  }
  sel.addEventListener('change', apply);
  box.addEventListener('change', apply);
  apply();
});
